"""Publication metadata: the YAML loader, and a package that curators and the spec accept.

With complete metadata a package must validate with no warning at any level (INFO included),
file hashes checked. The spec looks every author/maintainer ``github_user`` up on GitHub unless
it is one it already knows; this machine has no route to api.github.com, so the complete
fixture uses ``githubuser2``, a name in the spec's own known list (no look-up), and a separate
test looks a user up only when GitHub is reachable.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from srunet.model.package import PROJECT_PUBLICATION, build_package
from srunet.model.publication import Publication, load_publication

COMPLETE = {
    "authors": [{"name": "Jane Doe", "affiliation": "Example Institute",
                 "orcid": "0000-0002-1825-0097", "github_user": "githubuser2"}],
    "maintainers": [{"name": "Jane Doe", "github_user": "githubuser2"}],
    "git_repo": "https://github.com/example/srunet",
    "cite": [{"text": "Doe (2026). A 2x model.", "doi": "10.1234/example"}],
    "tags": ["kidney"],
    "training_data": "Registered confocal/ISM pairs of mouse kidney sections (example).",
}


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "publication.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_project_publication_loads():
    publication = load_publication(PROJECT_PUBLICATION)
    assert publication.authors and publication.cite
    assert all(c.doi or c.url for c in publication.cite)


def test_complete_metadata_has_nothing_missing(tmp_path):
    assert load_publication(_write(tmp_path, COMPLETE)).missing_for_upload() == []
    partial = dict(COMPLETE, maintainers=[], git_repo=None,
                   authors=[{"name": "Jane Doe"}])
    assert len(load_publication(_write(tmp_path, partial)).missing_for_upload()) == 3


@pytest.mark.parametrize("change, field, value", [
    ({"colour": "red"}, "colour", "red"),
    ({"authors": [{"name": "A", "orcid": "0000-0002-1825-0098"}]}, "orcid",
     "0000-0002-1825-0098"),
    ({"authors": [{"name": "A", "github_user": "https://github.com/a"}]}, "github_user",
     "https://github.com/a"),
    ({"maintainers": [{"name": "A"}]}, "maintainers.0.github_user", None),
    ({"cite": [{"text": "no link"}]}, "cite.0", "no link"),
    ({"cite": [{"text": "t", "doi": "https://doi.org/10.1/x"}]}, "cite.0", "https://doi.org/10.1/x"),
    ({"git_repo": "github.com/x"}, "git_repo", "github.com/x"),
    ({"tags": ["Super Resolution"]}, "tags", "Super Resolution"),
    ({"training_domain": "everything"}, "training_domain", "everything"),
])
def test_bad_metadata_names_file_field_and_value(tmp_path, change, field, value):
    path = _write(tmp_path, dict(COMPLETE, **change))
    with pytest.raises(ValueError) as info:
        load_publication(path)
    message = str(info.value)
    assert str(path) in message and field in message
    if value is not None:
        assert value in message


def test_missing_and_non_mapping_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="packaging.md"):
        load_publication(tmp_path / "nope.yaml")
    with pytest.raises(ValueError, match="mapping"):
        load_publication(_write(tmp_path, ["a"]))


@pytest.fixture(scope="module")
def complete_package(tiny_checkpoint, tmp_path_factory, make_pair):
    publication = Publication.model_validate(COMPLETE)
    out = tmp_path_factory.mktemp("complete") / "pkg"
    return build_package(tiny_checkpoint, out, run_test=False, sample=make_pair(4),
                         publication=publication)


def test_complete_package_validates_without_any_warning(complete_package):
    """Every level: collected warnings empty, and INFO-level validation (warnings = errors) passes."""
    from bioimageio.spec import ValidationContext, load_description

    descr = load_description(complete_package, perform_io_checks=True)
    summary = descr.validation_summary
    assert summary.status == "valid-format", summary.format()
    warnings = [(w.loc, w.msg) for d in summary.details for w in d.warnings]
    assert warnings == []
    with ValidationContext(warning_level=20, perform_io_checks=True):
        strict = load_description(complete_package, perform_io_checks=True)
    assert strict.validation_summary.status == "valid-format", strict.validation_summary.format()
    assert [a.github_user for a in descr.maintainers] == ["githubuser2"]
    assert str(descr.git_repo).rstrip("/") == COMPLETE["git_repo"]
    assert {"super-resolution", "image-restoration", "kidney"} <= set(descr.tags)


def test_training_domain_selects_the_simulated_ranges_in_the_card():
    """Weights trained on simulated pairs are described from the contract's own numbers: the
    ranges drawn beyond it appear only for a mixed or wide pool, with the mixed share said."""
    from srunet.model.card import training_data_text
    from srunet.physics import contract

    plain, mixed, wide = (training_data_text(d) for d in ("contract", "mixed", "wide"))
    low, high = contract.WIDE["lr_fwhm_nm"]
    assert f"confocal FWHM {low:g}-{high:g} nm" in " ".join(mixed.split())
    assert "confocal FWHM" not in plain and "Half of the pairs" not in wide
    assert "Half of the pairs" in mixed and mixed.startswith(plain.split("\n\n")[0])
    with pytest.raises(ValueError, match="'everything'"):
        training_data_text("everything")


def test_card_sections_and_training_data(complete_package):
    card = (complete_package.parent / "README.md").read_text(encoding="utf-8")
    for section in ("## Intended use", "# Validation", "## Limitations", "## Citation",
                    "## Training data", "## Consumers"):
        assert section in card, section
    assert COMPLETE["training_data"] in card
    assert "https://doi.org/10.1234/example" in card
    assert "ilastik" in card.split("## Consumers")[1]


def test_cover_is_2_to_1_small_png(complete_package):
    from PIL import Image

    cover = complete_package.parent / "cover.png"
    with Image.open(cover) as image:
        assert image.format == "PNG"
        assert image.size[0] == 2 * image.size[1]
    assert cover.stat().st_size < 500_000


def _github_reachable() -> bool:
    try:
        socket.create_connection(("api.github.com", 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _github_reachable(),
                    reason="api.github.com unreachable: bioimageio.spec cannot look up a "
                           "github_user it does not know; validate online before uploading")
def test_unknown_github_user_is_looked_up_online(tmp_path):
    from bioimageio.spec.model.v0_5 import Author

    from bioimageio.spec import ValidationContext

    with ValidationContext(perform_io_checks=True):
        assert Author(name="Octo Cat", github_user="octocat").github_user == "octocat"
