"""The evaluation-protocol gate (issue 14 §4): differing protocols refuse to compare and name the difference;
protocols travel through record() and the runner's summary.json unchanged."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import nbformat
import pytest

from facelift_lib import workbook
from facelift_lib.protocol import (PROTOCOL_FIELDS, EvalProtocol, Measured, ProtocolMismatch, assert_comparable,
                                   compare, measured_from_summary, protocol_table)

BASE = dict(split="val", samples=["000003", "000007"], input_views=[0, 1, 2, 3, 4], scored_views=[5],
            mask_source="02 preprocessed rig masks", background="white", resolution=64, extra={"min_opacity": 0.05})
# one change per field (n changes through the samples: it is their count)
CHANGES = {
    "split": {"split": "test"},
    "samples": {"samples": ["000003", "000011"]},
    "input_views": {"input_views": [0]},
    "scored_views": {"scored_views": [0, 1, 2, 3, 4, 5]},
    "mask_source": {"mask_source": "04 generated views' alpha"},
    "background": {"background": "black"},
    "resolution": {"resolution": 128},
    "n": {"samples": ["000003", "000007", "000011"]},
    "extra": {"extra": {"min_opacity": 0.1}},
}


def proto(**changes) -> EvalProtocol:
    return EvalProtocol(**{**BASE, **changes})


def test_every_field_has_a_case():
    assert set(CHANGES) == set(PROTOCOL_FIELDS)


@pytest.mark.parametrize("field", list(CHANGES))
def test_gate_raises_on_each_differing_field_and_names_it(field):
    a, b = proto(), proto(**CHANGES[field])
    with pytest.raises(ProtocolMismatch) as err:
        assert_comparable(a, b, what="05 metrics")
    message = str(err.value)
    assert f"{field}:" in message and "05 metrics" in message
    others = set(PROTOCOL_FIELDS) - {field} - ({"samples"} if field == "n" else set())
    assert not any(f"  {o}:" in message for o in others), message  # only what differs is named
    with pytest.raises(ProtocolMismatch, match=field):
        compare(Measured(1.0, a), Measured(2.0, b))
    with pytest.raises(ProtocolMismatch, match=field):
        _ = Measured(1.0, a) > Measured(2.0, b)


def test_gate_names_every_differing_field_at_once():
    with pytest.raises(ProtocolMismatch) as err:
        assert_comparable(proto(), proto(split="train", resolution=128, background="black"))
    assert "differ in split, background, resolution" in str(err.value)


def test_equal_protocols_compare():
    a, b = Measured(18.5, proto()), Measured(17.0, proto(samples=("000003", "000007")))  # tuple or list: same
    assert a.protocol == b.protocol and hash(a.protocol) == hash(b.protocol)
    assert a > b and b < a and a >= b and compare(a, b) == pytest.approx(1.5) and a - b == pytest.approx(1.5)
    assert assert_comparable(a, b, proto()) == proto()


def test_allow_opens_the_gate_only_for_the_named_fields():
    train = proto(split="train", samples=["000001", "000002", "000004"])
    assert compare(Measured(20.0, train), Measured(15.0, proto()), allow=["split", "samples"]) == 5.0  # n follows samples
    with pytest.raises(ProtocolMismatch, match="resolution"):
        assert_comparable(train.replace(resolution=128), proto(), allow=["split", "samples"])
    with pytest.raises(ValueError, match="unknown fields"):
        assert_comparable(proto(), proto(), allow=["splitt"])


def test_bare_numbers_carry_no_protocol():
    with pytest.raises(TypeError, match="no protocol"):
        _ = Measured(1.0, proto()) > 0.5
    with pytest.raises(TypeError, match="no protocol"):
        assert_comparable(proto(), 0.5)


def test_dict_round_trip_and_bad_dicts():
    p = proto()
    d = p.to_dict()
    assert d["n"] == 2 and json.loads(json.dumps(d)) == d
    assert EvalProtocol.from_dict(json.loads(json.dumps(d))) == p
    assert Measured.from_dict(Measured(3.5, p).to_dict()) == Measured(3.5, p)
    with pytest.raises(ValueError, match="n=3"):
        EvalProtocol.from_dict({**d, "n": 3})
    with pytest.raises(ValueError, match="unknown keys \\['view'\\]"):
        EvalProtocol.from_dict({**d, "view": 5})
    with pytest.raises(ValueError, match="missing keys \\['mask_source'\\]"):
        EvalProtocol.from_dict({k: v for k, v in d.items() if k != "mask_source"})
    with pytest.raises(TypeError, match="string"):
        proto(samples="000003")
    with pytest.raises(ValueError, match="empty"):
        proto(samples=[])


def test_label_says_the_protocol_in_one_line():
    assert proto().label() == ("val n=2 (000003, 000007) · views 0-4 → 5 · masks: 02 preprocessed rig masks · "
                               "white bg · 64² · min_opacity=0.05")


def test_protocol_table_gates_rows_and_shows_allowed_differences():
    rows = {"trained": {"psnr_masked": 18.0}, "untrained": {"psnr_masked": 9.0}}
    table = protocol_table(rows, {"trained": proto(), "untrained": proto()})
    assert list(table.columns) == ["psnr_masked"] and table.attrs["protocol"] == proto().label()
    rows["on training samples"] = {"psnr_masked": 25.0}
    protocols = {"trained": proto(), "untrained": proto(), "on training samples": proto(split="train")}
    with pytest.raises(ProtocolMismatch, match="split"):
        protocol_table(rows, protocols)
    table = protocol_table(rows, protocols, allow=["split"])
    assert table["split"].tolist() == ["val", "val", "train"]
    assert table.attrs["protocol"] == "n=2 (000003, 000007) · " + proto().label().split(" · ", 1)[1] + " · per row: split"
    protocols["on training samples"] = proto(split="train", samples=["000001", "000002", "000004", "000005"])
    table = protocol_table(rows, protocols, allow=["split", "samples"])
    assert table["samples"].tolist()[-1] == "000001, 000002, 000004, …" and table["n"].tolist() == [2, 2, 4]
    assert table.attrs["protocol"].startswith("views 0-4 → 5") and table.attrs["protocol"].endswith("per row: split, samples, n")
    with pytest.raises(ValueError, match="no protocol"):
        protocol_table(rows, {"trained": proto()})


def _record_output(monkeypatch, *args, **kwargs):
    """The display_data output record(*args) emits in a notebook."""
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, raw=False: shown.append(obj))
    workbook.record(*args, **kwargs)
    (bundle,) = shown
    return nbformat.v4.new_output("display_data", data=bundle)


def test_record_carries_the_protocol_into_the_output(monkeypatch):
    out = _record_output(monkeypatch, "psnr", 18.123456, protocol=proto())
    assert out.data["text/plain"] == f"psnr = 18.1235  [{proto().label()}]"
    assert out.data[workbook.RECORD_MIMETYPE] == {"name": "psnr", "value": 18.123456, "protocol": proto().to_dict()}
    assert _record_output(monkeypatch, "psnr", Measured(2.0, proto())).data == out.data | {
        "text/plain": f"psnr = 2.0  [{proto().label()}]", workbook.RECORD_MIMETYPE: {
            "name": "psnr", "value": 2.0, "protocol": proto().to_dict()}}
    plain = _record_output(monkeypatch, "ply", "recon.ply")  # not a metric: no protocol
    assert workbook.RECORD_MIMETYPE in plain.data and "protocol" not in plain.data[workbook.RECORD_MIMETYPE]
    with pytest.raises(ProtocolMismatch, match="resolution"):
        _record_output(monkeypatch, "psnr", Measured(2.0, proto()), protocol=proto(resolution=128))
    with pytest.raises(TypeError, match="EvalProtocol"):
        _record_output(monkeypatch, "psnr", 2.0, protocol=proto().to_dict())


def test_collect_protocols_beside_collect_records(monkeypatch):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("record(...)")
    cell.outputs = [_record_output(monkeypatch, "a", 1.0, protocol=proto()),
                    _record_output(monkeypatch, "b", 2.0, protocol=proto(split="test")),
                    _record_output(monkeypatch, "b", 3.0),  # a later record without a protocol drops it
                    _record_output(monkeypatch, "c", "x.ply")]
    nb.cells.append(cell)
    assert workbook.collect_records(nb) == {"a": 1.0, "b": 3.0, "c": "x.ply"}
    assert workbook.collect_protocols(nb) == {"a": proto().to_dict()}


NOTEBOOK = """\
# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
out_dir = "../outputs/smoke"
resolution = 64

# %%
from facelift_lib.protocol import EvalProtocol, Measured
from facelift_lib.workbook import record
p = EvalProtocol(split="val", samples=["000003", "000007"], input_views=[0, 1, 2, 3, 4], scored_views=[5],
                 mask_source="02 preprocessed rig masks", background="white", resolution=resolution)
record("psnr_masked", 18.25, protocol=p)
record("mask_iou", Measured(0.5, p))
record("ply", "recon.ply")
"""


def test_round_trip_through_summary_json_of_a_run(tmp_path):
    """A notebook records with protocols; the runner writes summary.json; the numbers read back with them,
    compare with numbers measured the same way and refuse those measured at another resolution."""
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    (nb_dir / "00_p.py").write_text(NOTEBOOK)
    profile = tmp_path / "p.yaml"
    profile.write_text(textwrap.dedent(f"""
        profile: t
        out_dir: {tmp_path / 'out'}
        00_p: {{resolution: 128}}
    """))
    workbook.run_profile(workbook.load_profile(profile), nb_dir)
    summary_path = tmp_path / "out" / "summary.json"
    entry = json.loads(summary_path.read_text())["notebooks"]["00_p"]
    assert entry["metrics"] == {"psnr_masked": 18.25, "mask_iou": 0.5, "ply": "recon.ply"}
    assert set(entry["protocols"]) == {"psnr_masked", "mask_iou"}
    psnr = measured_from_summary(summary_path, "00_p", "psnr_masked")
    assert psnr == Measured(18.25, proto(resolution=128, extra={}))
    assert compare(psnr, Measured(17.25, proto(resolution=128, extra={}))) == 1.0
    with pytest.raises(ProtocolMismatch, match="resolution: 128 vs 64"):
        compare(psnr, Measured(17.25, proto(extra={})))
    with pytest.raises(KeyError, match="without a protocol"):
        measured_from_summary(summary_path, "00_p", "ply")
    with pytest.raises(KeyError, match="no 'psnr'"):
        measured_from_summary(json.loads(summary_path.read_text()), "00_p", "psnr")
    assert Path(tmp_path / "out" / "00_p.ipynb").is_file()


def test_evaluate_states_the_protocol_it_scored():
    from test_metrics import TinyDataset  # two 6-view samples s0, s1 at 16², white background

    from facelift_lib.metrics import background_only, evaluate

    _, means = evaluate(background_only, TinyDataset(), num_input_views=5, progress=False, split="val",
                        mask_source="square")
    assert means["protocol"] == EvalProtocol(split="val", samples=["s0", "s1"], input_views=[0, 1, 2, 3, 4],
                                             scored_views=[5], mask_source="square", background="1,1,1", resolution=16)
    _, means = evaluate(background_only, TinyDataset(), views="all", num_input_views=1, max_samples=1,
                        progress=False, split="val", mask_source="square")
    assert (means["protocol"].samples, means["protocol"].input_views, means["protocol"].scored_views) == (
        ("s0",), (0,), (0, 1, 2, 3, 4, 5))
    assert "protocol" not in evaluate(background_only, TinyDataset(), progress=False)[1]
    with pytest.raises(ValueError, match="both split and mask_source"):
        evaluate(background_only, TinyDataset(), progress=False, split="val")
