"""Dataset reading: scanning on-disk layouts into `SourceItem`s and decoding images robustly."""
