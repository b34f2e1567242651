"""The simulator of paired confocal/ISM images: kidney-like phantoms (``phantom``, drawn with
``drawing``) and, in the wide domain (``wide``), further structure families (``structures``),
imaged through the forward model of ``srunet.physics`` (``simulator``)."""
