"""The physics of the acquisition, in one place: the contract's numbers (``contract``) and the
forward model that turns an object into confocal and ISM images (``optics``: PSFs, blur, binning
onto the 2x pixel grid of ``srunet.geometry``, camera noise). The simulator, the tile dataset and
the physics-consistency check all use these."""
