"""srunet: 2x super-resolution of spinning-disk confocal images to ISM quality.

Subpackages: ``srunet.model`` (architecture and zoo package), ``srunet.training`` (simulation,
dataset, training), ``srunet.evaluation`` (metrics and quality control). The command line is
``srunet`` (:mod:`srunet.cli`).
"""

__version__ = "0.3.0"
