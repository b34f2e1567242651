"""Run BiaPy's command line (``biapy --config ...``) on a local zoo package; runs INSIDE .venv-biapy.

Usage: ``.venv-biapy/bin/python bench/biapy_run.py RDF [--lift-sr-normalization-check] -- BIAPY-ARGS``.
bench/biapy_check.py calls it; nothing of the project is imported here (BiaPy's venv has
its own pins).

BiaPy finds a ``MODEL.SOURCE: bmz`` model only in the bioimage.io catalogue:
``biapy/models/__init__.py`` ``check_bmz_args`` calls ``find_bmz_models``, which downloads the
whole catalogue from hypha.aicell.io (``requests.get``, line 1136) and matches the
``MODEL.BMZ.SOURCE_MODEL_ID`` against nicknames and ids, so an unpublished package (and any
package offline) is "not found". This script stands in for that catalogue only: the entry it
returns carries the package's own rdf.yaml as its manifest, which is what the catalogue serves.
Everything else is BiaPy's code: the compatibility check of the RDF, the configuration it
derives, ``load_description`` and ``build_bmz_model`` of the local rdf.yaml, its super-resolution
test loop (patching, padding, merge) and its (un)normalisation.

``--lift-sr-normalization-check`` is a diagnostic, not how BiaPy runs: BiaPy 3.7.1 rejects any
normalisation but ``div``/``scale_range`` in the super-resolution workflow
(``biapy/engine/check_configuration.py`` lines 1961-1962), also when the BMZ model's RDF sets it.
With the flag that one check sees ``div`` while the configuration keeps the RDF's
``zero_mean_unit_variance``, to measure what BiaPy would compute if it accepted it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


def serve_catalogue_entry(rdf: Path) -> None:
    """Make BiaPy's catalogue look-up return ``rdf`` as the one matching model."""
    import biapy.models as models

    manifest = yaml.safe_load(rdf.read_text())

    def find_bmz_models(model_ID=None, **_):  # noqa: N803 (BiaPy's signature)
        return [{"artifact_path": str(rdf), "id": str(rdf), "alias": None, "nickname": None,
                 "rdf_source": str(rdf), "version": None,
                 "format_version": manifest.get("format_version"), "urls": {},
                 "raw": {"id": str(rdf), "type": "model", "manifest": manifest}}]

    models.find_bmz_models = find_bmz_models  # check_bmz_args looks it up in this module


def lift_sr_normalization_check() -> None:
    """Let BiaPy's configuration check pass zero_mean_unit_variance in super-resolution."""
    import biapy._biapy as entry
    import biapy.engine.base_workflow as workflow
    import biapy.engine.check_configuration as checks

    original = checks.check_configuration

    def check_configuration(cfg, *args, **kwargs):
        kind = cfg.DATA.NORMALIZATION.TYPE
        if cfg.PROBLEM.TYPE != "SUPER_RESOLUTION" or kind != "zero_mean_unit_variance":
            return original(cfg, *args, **kwargs)
        cfg.DATA.NORMALIZATION.TYPE = "div"  # only for the one SR normalisation check
        try:
            return original(cfg, *args, **kwargs)
        finally:
            cfg.DATA.NORMALIZATION.TYPE = kind

    entry.check_configuration = workflow.check_configuration = check_configuration


def main(argv: list[str]) -> None:
    if "--" not in argv or not argv:
        sys.exit(__doc__)
    ours, biapy_args = argv[: argv.index("--")], argv[argv.index("--") + 1:]
    serve_catalogue_entry(Path(ours[0]).resolve())
    if "--lift-sr-normalization-check" in ours:
        lift_sr_normalization_check()
    import biapy

    sys.argv = ["biapy", *biapy_args]
    biapy.main()  # BiaPy's console script (`biapy`); exits with its status


if __name__ == "__main__":
    main(sys.argv[1:])
