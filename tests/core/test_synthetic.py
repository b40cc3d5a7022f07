import numpy as np

from falco.backbones.dcgan import load_dcgan
from falco.data.synthetic import SyntheticSource


def test_zoomed_out_views_read_and_fill_with_grey():
    # scale_jitter 0.5 draws zoom-outs (scale < 1): the crop box starts outside the photo.
    src = SyntheticSource(load_dcgan(), identities=2, views=6, augment=True, scale_jitter=0.5, seed=1)
    views = [src.read(item) for item in src.items]
    assert all(v.shape == (128, 128, 3) and v.dtype == np.uint8 for v in views)
    assert len({v.tobytes() for v in views}) == len(views)  # every view differs
    # Reading again gives the same photo (views are deterministic per item id).
    assert np.array_equal(src.read(src.items[3]), views[3])
