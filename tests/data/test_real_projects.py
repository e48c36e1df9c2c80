"""Real public Rasa projects and Alexa models (tests/fixtures/real/SOURCES.md) import, validate,
train and parse. Nobody here wrote them: they carry the quirks our own fixtures would not."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nlu.data.importers import Imported, read_alexa, read_dialogflow, read_rasa, write_import
from nlu.data.importers.common import literal
from nlu.data.skills import (
    OUT_OF_SCOPE_FILE,
    parse_annotated,
    parse_out_of_scope_file,
    parse_skill_file,
)
from nlu.data.validate import validate
from tests.helpers import FIXTURES

REAL = FIXTURES / "real"
RASA = {
    "formbot": [REAL / "rasa/formbot"],
    "concerts": [REAL / "rasa/concertbot"],
    "moods": [REAL / "rasa/responseselectorbot"],
    "knowledgebase": [REAL / "rasa/knowledgebasebot/data/nlu.yml"],
    "helpdesk": [REAL / "rasa/helpdesk-assistant"],
    "flights": [REAL / "rasa/rasa-test-data/demo-rasa-composite-entities.yml"],
    "groceries": [
        REAL / "rasa/rasa-test-data/demo-rasa-lookup-ents.yml",
        REAL / "rasa/rasa-test-data/lookup_table.yml",
    ],
}
ALEXA = sorted((REAL / "alexa").glob("*.json"))


DIALOGFLOW = {"bike-shop": REAL / "dialogflow/bike-shop"}


def read(name: str) -> Imported:
    if name in RASA:
        return read_rasa(RASA[name], skill=name)
    if name in DIALOGFLOW:
        return read_dialogflow(DIALOGFLOW[name], skill=name)
    return read_alexa(REAL / "alexa" / name)


ALL = [*RASA, *(p.name for p in ALEXA), *DIALOGFLOW]


@pytest.mark.parametrize("name", ALL)
def test_every_real_project_imports_validates_and_holds_out_tests(
    name: str, tmp_path: Path
) -> None:
    imported = read(name)
    n_before = sum(len(i["utterances"]) for i in imported.intents.values())
    folder = write_import(imported, tmp_path / "skills", test_fraction=0.2)
    (report,) = validate([str(folder)])
    assert report.ok, report.problems
    # the importer's own output never makes the reader warn (duplicates, case variants); what
    # is left is about the source itself: one text under two intents
    expected = (
        ["'good afternoon' is also an utterance of intent 'greet'"] if name == "moods" else []
    )
    assert len(report.warnings) == len(expected), report.warnings
    assert all(e in w for e, w in zip(expected, report.warnings, strict=True))
    n_train = sum(len(i["utterances"]) for i in imported.intents.values())
    assert report.examples["test"] > 0 and n_train < n_before  # held out, not copied
    spec = parse_skill_file(folder / "skill.yaml")
    assert {i.name for i in spec.intents} == set(imported.intents)


def test_rasa_out_of_scope_intent_becomes_negatives_not_an_intent(tmp_path: Path) -> None:
    imported = read("helpdesk")
    assert "out_of_scope" not in imported.intents
    folder = write_import(imported, tmp_path)
    negatives = parse_out_of_scope_file(folder / OUT_OF_SCOPE_FILE)["train"]
    assert "order a pizza" in negatives and "what is the meaning of life." in negatives
    labels = parse_skill_file(folder / "skill.yaml").labels
    assert labels.slot_values["priority"]["urgent"] == "high"  # the synonym table
    assert labels.slot_values["priority"]["really important"] == "high"  # an annotation's value


def test_rasa_roles_become_slots_of_one_type_and_groups_are_reported() -> None:
    imported = read("flights")
    assert imported.intents["book_flight"]["slots"] == {
        "location_from": "location",
        "location_to": "location",
    }
    location = {
        v if isinstance(v, str) else v["value"] for v in imported.slots["location"]["values"]
    }
    assert {"Berlin", "San Fransisco", "Munich"} <= location
    assert any("group labels dropped for size, topping" in w for w in imported.warnings)


def test_rasa_dashless_lines_shorthand_values_lookups_and_several_files() -> None:
    formbot = read("formbot")
    assert "Hi" in formbot.intents["greet"]["utterances"]  # a line without "- "
    cuisine = formbot.slots["cuisine"]["values"]
    assert {
        "value": "gastropub",
        "synonyms": ["gastro pub"],
    } in cuisine  # [gastro pub](cuisine:gastropub)
    kb = read("knowledgebase")
    kb_values = {v if isinstance(v, str) else v["value"] for v in kb.slots["restaurant"]["values"]}
    assert "Lụa Restaurant" in kb_values  # from the lookup table
    groceries = read("groceries")
    assert set(groceries.intents) == {"affirm", "buy_groceries", "restaurant_search"}
    assert any("plates name no annotated entity" in w for w in groceries.warnings)


def test_rasa_project_folders_skip_what_is_not_nlu_data() -> None:
    concerts = read("concerts")
    assert "skipped 1 file(s) without an `nlu:` section" in " ".join(concerts.notes)
    moods = read("moods")
    assert "chitchat_ask_name" in moods.intents and "2 response(s) not imported" in " ".join(
        moods.notes
    )


def test_alexa_shared_synonyms_builtins_and_builder_layout(tmp_path: Path) -> None:
    controls = read("ask-sdk-controls-generated.json")
    assert any("'should be' is listed for both 'set' and 'change'" in w for w in controls.warnings)
    labels = parse_skill_file(write_import(controls, tmp_path) / "skill.yaml").labels
    assert labels.slot_values["action"]["should be"] == "set"  # first in file order
    assert labels.slot_values["feedback"]["naw"] == "disaffirm"  # listed twice upstream: once here
    trip = read("ask-sdk-java-plantripdialog.json")  # no interactionModel wrapper
    assert trip.slots["AMAZON_DATE"]["kind"] == "date"
    assert "flying out of {fromCity}" in trip.intents["PlanMyTripIntent"]["utterances"]
    assert trip.intents["PlanMyTripIntent"]["slots"]["toCity"] == "AMAZON_US_CITY"
    game = read("ask-sdk-python-highlowgame.json")
    assert game.slots["AMAZON_NUMBER"]["kind"] == "number"
    sttm = read("sttm-gurbani.json")
    assert "help" in sttm.intents and "AMAZON.StopIntent" in " ".join(sttm.notes)


def test_a_dialogflow_agent_zip_or_folder_imports_the_same(tmp_path: Path) -> None:
    import zipfile

    folder = read("bike-shop")
    archive = tmp_path / "BikeShop.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(DIALOGFLOW["bike-shop"].rglob("*.json")):
            z.write(f, f.relative_to(DIALOGFLOW["bike-shop"]))
    zipped = read_dialogflow(archive, skill="bike-shop")
    assert (zipped.intents, zipped.slots) == (folder.intents, folder.slots)
    appointment = folder.intents["Make_Appointment"]
    assert appointment["slots"] == {"date": "sys_date", "time": "sys_time"}
    assert "Can I schedule service for [4pm](time) [tomorrow](date)?" in appointment["utterances"]
    assert "Can you fix my road bike?" in appointment["utterances"]  # @sys.ignore: plain text
    assert folder.slots["sys_date"]["kind"] == "date"
    assert {"value": "fix", "synonyms": ["repair", "mend", "broken", "flat tire", "fixed"]} in (
        folder.slots["AppointmentType"]["values"]
    )


def test_every_real_project_trains_beside_the_others_and_parses(
    tmp_path: Path, make_config: Callable[..., Any]
) -> None:
    from nlu.inference.parser import Parser
    from nlu.training.train import train

    skills = tmp_path / "skills"
    probes: dict[str, str] = {}
    for name in ALL:
        imported = read(name)
        write_import(imported, skills)
        intent = max(imported.intents.values(), key=lambda i: len(i["utterances"]))
        probes[imported.skill] = literal(
            intent["utterances"][0], intent["slots"], imported.slots, random.Random(0)
        )
    cfg = make_config(tmp_path / "run", data=[str(skills)], epochs=12, samples_per_template=3)
    parser = Parser.from_pretrained(train(cfg).model_dir)
    texts = [parse_annotated(t)[0] for t in probes.values()]
    results = parser.parse(texts)
    routed = [r.skill.name if r.skill else None for r in results]
    right = sum(got == want for got, want in zip(routed, probes, strict=True))
    assert right >= len(probes) - 2, list(zip(probes, routed, strict=True))
