"""The simulator of paired confocal/ISM images: kidney-like phantoms (``phantom``, drawn with
``drawing``) imaged through the forward model of ``srunet.physics`` (``simulator``)."""
