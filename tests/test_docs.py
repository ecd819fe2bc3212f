"""The README is the front door: it must stay true to the code."""

import re
from pathlib import Path

from app.config import Settings
from ingest.config import IngestSettings

DOCUMENTED = {n.upper() for n in Settings.model_fields | IngestSettings.model_fields}

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_opens_with_the_two_commands():
    first_block = README.split("```")[1]
    assert "make demo" in first_block and "make test" in first_block


def test_readme_documents_every_setting():
    for name in DOCUMENTED:
        assert f"`CTR_{name}`" in README, f"CTR_{name} is not in the README"


def test_readme_documents_no_setting_that_does_not_exist():
    documented = set(re.findall(r"`CTR_([A-Z_]+)`", README))
    assert documented <= DOCUMENTED | {"TRAIN_NODES"}


def test_every_make_target_the_readme_names_exists():
    makefile = (ROOT / "Makefile").read_text()
    for target in set(re.findall(r"(?:^|`)make ([a-z-]+)", README, re.M)):
        assert re.search(rf"^{target}:", makefile, re.M), f"make {target} is not defined"


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
