"""Every file format hybrid reads or writes: XDMF fields, JSON summaries, NIfTI images (+ JSON sidecars)."""
