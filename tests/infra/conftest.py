from __future__ import annotations

from pathlib import Path

import pytest

from tests.infra import bicep
from tests.infra.armtypes import TypeIndex, shared_types_dir

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"


def need_shared(folder: Path) -> Path:
    if not folder.is_dir():
        pytest.skip(
            f"{folder} is absent: Azure's resource types and azd's schemas sit beside the checkout in CI "
            "(../shared); a plain clone checks syntax and the project's own rules only"
        )
    return folder


@pytest.fixture(scope="session")
def type_index() -> TypeIndex:
    return TypeIndex(need_shared(shared_types_dir(REPO)))


@pytest.fixture(scope="session")
def infra() -> dict[str, bicep.Node]:
    """Every .bicep file under infra/, parsed, by its path relative to infra/."""
    return {str(path.relative_to(bicep.INFRA)): bicep.parse(path.read_text()) for path in bicep.bicep_files()}
