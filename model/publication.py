"""Publication metadata of a package: who made it, where it lives, what to cite, what it saw.

Read from a small YAML file beside the training config (the project's own:
``training/publication.yaml``), validated like the training config (pydantic, unknown keys
rejected, every error names the file, the field and the bad value). ``srunet package`` writes
it into ``rdf.yaml`` (authors, maintainers, git_repo, cite, tags, license) and the model card
(training data, citation). What a lab fills in before uploading: docs/packaging.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# GitHub's own rule: 1-39 alphanumerics or single inner hyphens.
_GITHUB_USER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$")
_ORCID = re.compile(r"^\d{4}-\d{4}-\d{4}-\d{3}[\dX]$")
_TAG = re.compile(r"^[a-z0-9][a-z0-9+.-]*$")


def _orcid_checksum_ok(orcid: str) -> bool:
    """ISO 7064 11-2 check digit, as ORCID (and bioimageio.spec) compute it."""
    digits = orcid.replace("-", "")
    total = 0
    for char in digits[:-1]:
        total = (total + int(char)) * 2
    check = (12 - total % 11) % 11
    return digits[-1] == ("X" if check == 10 else str(check))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Person(_Strict):
    """An author: ``name`` required; the rest is what curators and the site show."""

    name: str = Field(min_length=1)
    affiliation: Optional[str] = None
    email: Optional[str] = None
    orcid: Optional[str] = Field(None, description="0000-0002-1825-0097 form, checksum checked")
    github_user: Optional[str] = Field(None, description="GitHub login, without https://github.com/")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if "/" in value or "\\" in value:  # bioimageio.spec rejects slashes in names
            raise ValueError(f"name must not contain '/' or '\\', got {value!r}")
        return value

    @field_validator("orcid")
    @classmethod
    def _orcid(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not (_ORCID.match(value) and _orcid_checksum_ok(value)):
            raise ValueError(f"orcid must look like 0000-0002-1825-0097 with a valid check "
                             f"digit, got {value!r}")
        return value

    @field_validator("github_user")
    @classmethod
    def _github(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not _GITHUB_USER.match(value):
            raise ValueError(f"github_user must be a GitHub login (letters, digits, inner "
                             f"hyphens, at most 39), not a URL; got {value!r}")
        return value


class Maintainer(Person):
    """Someone the zoo can contact through GitHub: ``github_user`` is required."""

    github_user: str


class Citation(_Strict):
    """A reference to cite: ``text`` plus a ``doi`` or a ``url``."""

    text: str = Field(min_length=1)
    doi: Optional[str] = None
    url: Optional[str] = None

    @model_validator(mode="after")
    def _link(self):
        if not self.doi and not self.url:
            raise ValueError(f"citation {self.text!r} needs a doi or a url")
        if self.doi and not re.match(r"^10\.\d{4,9}/\S+$", self.doi):
            raise ValueError(f"doi must look like 10.1234/abc (no https://doi.org/), got "
                             f"{self.doi!r}")
        return self


class Publication(_Strict):
    """Everything about a package that is not the network: see docs/packaging.md."""

    authors: list[Person] = Field(min_length=1)
    maintainers: list[Maintainer] = Field(default_factory=list)
    git_repo: Optional[str] = Field(None, description="https URL of the code repository")
    cite: list[Citation] = Field(min_length=1)
    tags: list[str] = Field(default_factory=list, description="added to the package's own tags")
    license: str = Field("MIT", description="SPDX identifier of the weights' license")
    training_data: Optional[str] = Field(
        None, description="Markdown for the card's 'Training data' section; leave it out for "
                          "weights trained on the srunet simulator (generated from the contract)")
    training_domain: Literal["contract", "mixed", "wide"] = Field(
        "contract", description="for weights trained on the srunet simulator: the "
        "`srunet simulate --domain` of their pairs; the card's 'Training data' section then "
        "lists the ranges drawn (ignored when training_data is given)")

    @field_validator("git_repo")
    @classmethod
    def _repo(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not value.startswith("https://"):
            raise ValueError(f"git_repo must be an https URL, got {value!r}")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        for tag in value:
            if not _TAG.match(tag):
                raise ValueError(f"tags are lower-case words joined by '-', got {tag!r}")
        return value

    def missing_for_upload(self) -> list[str]:
        """What bioimage.io curators ask for that this file does not give (empty: complete)."""
        missing = []
        if not self.maintainers and not any(a.github_user for a in self.authors):
            missing.append("a maintainer (or an author) with github_user")
        if not self.git_repo:
            missing.append("git_repo")
        if not all(a.affiliation for a in self.authors):
            missing.append("an affiliation for every author")
        return missing


def load_publication(path: str | Path) -> Publication:
    """Read and validate a publication YAML file.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        Naming the file, each bad field, its value and what is expected.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"publication metadata {path} does not exist; copy "
                                "training/publication.yaml and fill it in (docs/packaging.md)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must be a YAML mapping (authors:, cite:, ...), got "
                         f"{type(data).__name__}")
    try:
        return Publication.model_validate(data)
    except ValidationError as error:
        lines = []
        for item in error.errors():
            where = ".".join(str(part) for part in item["loc"]) or "(top level)"
            value = item.get("input")
            shown = "" if item["type"] == "missing" else f" (got {value!r})"
            lines.append(f"  {where}: {item['msg']}{shown}")
        raise ValueError(f"{path} has invalid publication metadata:\n" + "\n".join(lines)
                         + "\nsee docs/packaging.md for the fields") from None
