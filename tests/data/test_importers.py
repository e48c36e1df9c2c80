"""`nlu import rasa|alexa`: other tools' training data become skill folders that train."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nlu.cli import main
from nlu.data.importers import ImportFailed, import_alexa, import_rasa
from nlu.data.skills import parse_skill_file
from nlu.schema import DataError

RASA = """version: "3.1"
nlu:
- intent: order_coffee
  examples: |
    - a [latte](drink) please
    - i'd like a [cappuccino](drink)
    - one [flat white](drink) to go
    - can i get a [cafe latte]{"entity": "drink", "value": "latte"}
    - [espresso](drink) for me
    - get me a [mocha](drink)
- intent: cancel_order
  examples: |
    - cancel my order
    - never mind
    - forget the coffee
- synonym: flat white
  examples: |
    - flatty
- lookup: drink
  examples: |
    - americano
    - macchiato
- regex: order_id
  examples: |
    - \\d{5}
"""

ALEXA = {
    "interactionModel": {
        "languageModel": {
            "invocationName": "plant care",
            "intents": [
                {
                    "name": "WaterPlantIntent",
                    "slots": [
                        {"name": "plant", "type": "PlantType"},
                        {"name": "amount", "type": "AMAZON.NUMBER"},
                    ],
                    "samples": [
                        "water the {plant}",
                        "give the {plant} {amount} cups of water",
                        "did i water the {plant}",
                    ],
                },
                {
                    "name": "PlantInfoIntent",
                    "slots": [{"name": "plant", "type": "PlantType"}],
                    "samples": ["tell me about the {plant}", "how is my {plant} doing"],
                },
                {"name": "AMAZON.StopIntent", "samples": []},
            ],
            "types": [
                {
                    "name": "PlantType",
                    "values": [
                        {"name": {"value": "fern", "synonyms": ["ferns"]}},
                        {"name": {"value": "basil"}},
                        {"name": {"value": "monstera", "synonyms": ["swiss cheese plant"]}},
                    ],
                }
            ],
        }
    }
}


def test_rasa_import_keeps_annotations_values_and_synonyms(tmp_path: Path) -> None:
    source = tmp_path / "nlu.yml"
    source.write_text(RASA)
    spec = parse_skill_file(import_rasa(source, skill="coffee", out=tmp_path / "skills"))
    drinks = spec.labels.slot_values["drink"]
    assert drinks["cafe latte"] == "latte" and drinks["flatty"] == "flat white"
    assert drinks["americano"] == "americano"  # from the lookup table
    assert {i.name for i in spec.intents} == {"order_coffee", "cancel_order"}


def test_alexa_import_maps_types_and_builtin_kinds(tmp_path: Path) -> None:
    source = tmp_path / "model.json"
    source.write_text(json.dumps(ALEXA))
    spec = parse_skill_file(import_alexa(source, skill=None, out=tmp_path / "skills"))
    assert spec.name == "plant_care"
    labels = spec.labels
    assert labels.slot_kinds == {"amount": "number"}
    assert labels.slot_values["plant"]["swiss cheese plant"] == "monstera"
    assert {i.name for i in spec.intents} == {"WaterPlantIntent", "PlantInfoIntent"}


def test_import_errors_name_the_file_and_line_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "nlu.yml"
    bad.write_text("version: '3.1'\nrules: []\n")
    with pytest.raises(ImportFailed, match="no `nlu:` section"):
        import_rasa(bad, skill="x", out=tmp_path / "out")
    bad.write_text(RASA.replace("- never mind", '- never [mind]{"entity": "drink", "value": }'))
    out = tmp_path / "skills"
    assert main(["import", "rasa", str(bad), "--skill", "coffee", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:14: bad entity annotation" in err  # path:line: what
    assert not out.exists()  # nothing written, so the fixed rerun needs no --force
    bad.write_text(RASA)
    assert main(["import", "rasa", str(bad), "--skill", "coffee", "--out", str(out)]) == 0
    model = json.loads(json.dumps(ALEXA))
    model["interactionModel"]["languageModel"]["intents"][1]["slots"][0]["type"] = "Flowers"
    source = tmp_path / "model.json"
    source.write_text(json.dumps(model))
    with pytest.raises(DataError, match="'Flowers' is used by a slot but not defined"):
        import_alexa(source, skill="plants", out=out)
    source.write_text('{"interactionModel": {"languageModel": {"intents": [}}}')
    with pytest.raises(DataError, match=rf"{source}:1: invalid JSON"):
        import_alexa(source, skill="plants", out=out)
    assert sorted(p.name for p in out.iterdir()) == ["coffee"]  # no half-written skill


def test_an_example_nlu_cannot_read_is_dropped_with_its_line(tmp_path: Path) -> None:
    from nlu.data.importers import read_rasa

    source = tmp_path / "nlu.yml"
    source.write_text(RASA.replace("- never mind", "- never {mind} [this]"))
    imported = read_rasa([source], skill="coffee")
    assert "never {mind} [this]" not in " ".join(imported.intents["cancel_order"]["utterances"])
    assert any(f"{source}:14: 'never {{mind}} [this]'" in w for w in imported.warnings)


def test_force_replaces_a_skill_only_when_the_new_import_succeeds(tmp_path: Path) -> None:
    source = tmp_path / "nlu.yml"
    source.write_text(RASA)
    out = tmp_path / "skills"
    import_rasa(source, skill="coffee", out=out)
    (out / "coffee" / "notes.txt").write_text("mine")
    source.write_text(RASA.replace("- never mind", '- never [mind]{"entity": "drink", "value": }'))
    with pytest.raises(ImportFailed):
        import_rasa(source, skill="coffee", out=out, force=True)
    assert (out / "coffee" / "notes.txt").read_text() == "mine"  # the old folder is intact
    source.write_text(RASA)
    import_rasa(source, skill="coffee", out=out, force=True)
    assert not (out / "coffee" / "notes.txt").exists()
    assert [p.name for p in out.iterdir()] == ["coffee"]  # no staging folder left


def test_case_variant_synonyms_merge_and_renames_are_reported(tmp_path: Path) -> None:
    from nlu.data.importers import read_rasa

    source = tmp_path / "nlu.yml"
    source.write_text(
        "nlu:\n- intent: ask\n  examples: |\n"
        "    - tell me about [RASA playgrounds](product)\n"
        "    - what is [Rasa playgrounds](product)\n"
        "    - send [ten dollars](amount-of-money)\n"
        "- synonym: RASA playgrounds\n  examples: |\n    - playground\n"
        "- synonym: Rasa playgrounds\n  examples: |\n    - the playground\n"
    )
    imported = read_rasa([source], skill="docs")
    assert imported.slots["product"]["values"] == [
        {"value": "RASA playgrounds", "synonyms": ["playground", "the playground"]}
    ]
    assert imported.warnings == []  # same value in two spellings: merged, nothing lost
    assert "entity amount-of-money is named amount_of_money" in " ".join(imported.notes)
    spec = parse_skill_file(import_rasa(source, skill="docs", out=tmp_path / "skills"))
    assert spec.labels.slot_values["product"]["rasa playgrounds"] == "RASA playgrounds"


def test_alexa_builtin_number_types_become_kinds(tmp_path: Path) -> None:
    model = json.loads(json.dumps(ALEXA))
    intent = model["interactionModel"]["languageModel"]["intents"][0]
    intent["slots"].append({"name": "year", "type": "AMAZON.FOUR_DIGIT_NUMBER"})
    intent["samples"].append("i planted the {plant} in {year}")
    source = tmp_path / "model.json"
    source.write_text(json.dumps(model))
    labels = parse_skill_file(import_alexa(source, skill=None, out=tmp_path / "s")).labels
    assert labels.slot_kinds == {"amount": "number", "year": "number"}


def test_imported_skills_train_and_parse_end_to_end(
    tmp_path: Path, make_config: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from nlu.inference.parser import Parser
    from nlu.training.train import train

    (tmp_path / "nlu.yml").write_text(RASA)
    (tmp_path / "model.json").write_text(json.dumps(ALEXA))
    skills = tmp_path / "skills"
    assert (
        main(
            ["import", "rasa", str(tmp_path / "nlu.yml"), "--skill", "coffee", "--out", str(skills)]
        )
        == 0
    )
    assert main(["import", "alexa", str(tmp_path / "model.json"), "--out", str(skills)]) == 0
    assert (
        main(["import", "alexa", str(tmp_path / "model.json"), "--out", str(skills)]) == 2
    )  # exists
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["validate", str(skills)]) == 0
    result = train(make_config(tmp_path / "run", data=[str(skills)], epochs=20))
    parser = Parser.from_pretrained(result.model_dir)
    (coffee,) = parser.parse(["i'd like a cappuccino"])
    (plant,) = parser.parse(["water the basil"])
    assert coffee.skill is not None and coffee.skill.name == "coffee"
    assert plant.skill is not None and plant.skill.name == "plant_care"
    assert plant.intent is not None and plant.intent.name == "WaterPlantIntent"
    assert [(s.slot, s.value, s.resolved) for s in plant.slots] == [("plant", "basil", "basil")]
