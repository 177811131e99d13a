"""iOS package (issue 12): a Swift package from a real .mlpackage. No Swift compiler runs
here, so every Swift file is parsed by tree-sitter's Swift grammar and the package's
structure, resources and recorded expectations are checked."""
from __future__ import annotations

import json
import re

import pytest
from apps_common import swift_call_arguments, swift_constants, syntax_errors


@pytest.fixture(scope="module")
def ios_package(tmp_path_factory):
    from evit_export.models.reference import deploy_for_export
    from evit_export.targets import get_target

    from evit_export.packaging.package import build_package

    d = tmp_path_factory.mktemp("ios")
    deployed, spec = deploy_for_export("m0", num_classes=4, img_size=32, seed=9, labels=["cat", "dog", 'say "hi"',
                                                                                      "back\\slash"])
    artifact = get_target("coreml").export(deployed, spec, d / "m0_pets.mlpackage").path
    return build_package(artifact, d / "pkg", measure=False)


def test_swift_package_layout_and_syntax(ios_package):
    ios = ios_package / "ios"
    names = {p.relative_to(ios).as_posix() for p in ios.rglob("*") if p.is_file()}
    assert {"Package.swift", "Sources/M0Pets/M0PetsClassifier.swift", "Sources/M0Pets/Preprocessing.swift",
            "Sources/M0Pets/Resources/labels.txt", "Tests/M0PetsTests/M0PetsClassifierTests.swift",
            "Tests/M0PetsTests/Resources/sample.png"} <= names
    assert any(n.startswith("Sources/M0Pets/Resources/m0_pets.mlpackage/") for n in names)
    swift = sorted(ios.rglob("*.swift"))
    assert len(swift) == 4
    for path in swift:
        assert syntax_errors(path) == [], path
        assert "@@" not in path.read_text(), f"unfilled placeholder in {path.name}"
    package = (ios / "Package.swift").read_text()
    assert re.search(r"platforms: \[\.iOS\(\.v1[5-9]\), \.macOS\(\.v1[2-6]\)\]", package)


def test_classifier_follows_the_spec_and_the_recorded_sample(ios_package):
    """The values the Swift code runs with (read by tree-sitter as the compiler reads its
    literals, escapes included) are the package's preprocessing and recorded sample."""
    ios = ios_package / "ios"
    pre = json.loads((ios_package / "preprocessing.json").read_text())
    constants = swift_constants(ios / "Sources/M0Pets/M0PetsClassifier.swift")
    assert constants["imageSize"] == pre["img_size"]
    assert constants["cropPct"] == pytest.approx(pre["crop_pct"])
    assert constants["interpolation"] == pre["resize"]["interpolation"]
    assert constants["mean"] == pytest.approx(pre["mean"])
    assert constants["std"] == pytest.approx(pre["std"])
    # Crop and scale follow the spec: exact pixels by default, Vision's scaler over the
    # spec's crop region on request; never Vision's fixed centre crop.
    classifier = (ios / "Sources/M0Pets/M0PetsClassifier.swift").read_text()
    assert ".centerCrop" not in classifier
    # The test target expects the label PyTorch gave the sample: the string Swift decodes
    # (quotes and backslashes in labels survive the escaping) is the recorded label.
    expected = json.loads((ios_package / "expected.json").read_text())
    calls = swift_call_arguments(ios / "Tests/M0PetsTests/M0PetsClassifierTests.swift", "XCTAssertEqual")
    assert calls[0][1] == expected["artifact"]["top5"][0]["label"], calls[0]


def test_syntax_checker_catches_a_broken_swift_file(tmp_path):
    broken = tmp_path / "Broken.swift"
    broken.write_text("func f( -> Int { return 1 }\n")
    assert syntax_errors(broken)
