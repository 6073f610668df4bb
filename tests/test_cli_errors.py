"""Every command-line tool turns bad arguments into a one-line error and exit code 2,
before doing any work (no traceback, nothing written)."""

import pytest

from benchmarks import confidence_separation, depth_holes, network_speed, pipeline_speed, synthetic_throughput, working_distance
from tracker import cli, presence, side_classifier
from tracker.synth import contact_sheet


def exit_code_and_error(main, argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's parser.error
        code = exit_.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "main, argv, message",
    [
        (pipeline_speed.main, ["--frames", "0"], "--frames must be at least 1"),
        (pipeline_speed.main, ["--backend", "cuda-magic"], "unknown backend 'cuda-magic'"),
        (pipeline_speed.main, ["--segment-ahead", "-1"], "--segment-ahead must be >= 0"),
        (pipeline_speed.main, ["--frames", "50", "--warmup", "50"], "--warmup must be at least 0 and fewer than --frames"),
        (pipeline_speed.main, ["--input", "memory", "--pace", "0"], "--pace must be a positive number of frames per second"),
        (pipeline_speed.main, ["--input", "memory", "--pace", "nan"], "--pace must be a positive number of frames per second"),
        (pipeline_speed.main, ["--pace", "90"], "--pace needs --input memory"),
        (pipeline_speed.main, ["--input", "memory", "--pace", "90", "--segment-ahead", "2"], "--segment-ahead 0 or 1"),
        (pipeline_speed.main, ["--input", "memory", "--pace", "90", "--read-ahead", "1"], "--read-ahead does not apply"),
        (pipeline_speed.main, ["--replay-preparation"], "--replay-preparation need --replay-network"),
        (pipeline_speed.main, ["--replay-as-gpu"], "--replay-preparation need --replay-network"),
        (pipeline_speed.main, ["--read-ahead", "-1"], "--read-ahead must be at least 0"),
        (pipeline_speed.main, ["--replay-network", "--replay-gpu-ms", "1"], "--replay-gpu-ms needs --replay-as-gpu"),
        (pipeline_speed.main, ["--replay-network", "--replay-as-gpu", "--replay-gpu-ms", "-1"], "--replay-gpu-ms must be a number"),
        (synthetic_throughput.main, ["--samples", "0"], "--samples must be at least 1"),
        (side_classifier.main, ["evaluate", "--weights", "{tmp}/none"], "no side-classifier weights"),
        (presence.main, ["evaluate", "--weights", "{tmp}/none"], "no hand-presence weights"),
        (cli.main, ["--min-hand-probability", "1"], "--min-hand-probability must be at least 0"),
        (cli.main, ["--min-hand-probability", "nan"], "--min-hand-probability must be at least 0"),
        (presence.main, ["train", "--out", "{tmp}/run", "--steps", "0"], "must be at least 1"),
        (presence.main, ["train", "--out", "{tmp}/a_file"], "is a file, not a run directory"),
        (presence.main, ["train", "--out", "{tmp}/run", "--table-distance", "0.3", "0.1"], "--table-distance must be MIN MAX"),
        (side_classifier.main, ["train", "--out", "{tmp}/a_file"], "is a file, not a run directory"),
        (side_classifier.main, ["train", "--out", "{tmp}/run", "--lr", "-1"], "--lr must be a positive number"),
        (side_classifier.main, ["train", "--out", "{tmp}/run", "--lr", "0"], "--lr must be a positive number"),
        (side_classifier.main, ["evaluate", "--seeds", "-4"], "--seeds must be 0 or more"),
        (side_classifier.main, ["evaluate", "--switch-margin", "nan"], "--switch-margin must be a number of 0 or more"),
        (side_classifier.main, ["evaluate", "--switch-margin", "-1"], "--switch-margin must be a number of 0 or more"),
        (network_speed.main, ["--out", "{tmp}"], "is a folder"),
        (working_distance.main, ["--backend", "foo"], "invalid choice: 'foo'"),
        (working_distance.main, ["--first-seed", "-1"], "--first-seed at least 0"),
        (working_distance.main, ["--distances", "5"], "--distances and --track-distances must lie between"),
        (working_distance.main, ["--track-distances", "0.01"], "--distances and --track-distances must lie between"),
        (working_distance.main, ["--track-frames", "0"], "--track-frames at least 1"),
        (depth_holes.main, ["--loss-rates", "0.1", "1"], "--loss-rates must lie in [0, 1)"),
        (depth_holes.main, ["--distance", "0"], "--distance must lie between"),
        (depth_holes.main, ["--poses", "0"], "--poses must be at least 1"),
        (network_speed.main, ["--out", "{tmp}/a_file/x.json"], "is a file, not a folder"),
        (pipeline_speed.main, ["--out", "{tmp}"], "--out " + "{tmp} is a folder"),
        (pipeline_speed.main, ["--out", "{tmp}/a_file/x.json"], "is a file, not a folder"),
        (pipeline_speed.main, ["--out", "{tmp}/x.json", "--profile", "{tmp}"], "--profile " + "{tmp} is a folder"),
        # The committed result of 10,000 frames, which the docs cite, is not replaced by a shorter run.
        (pipeline_speed.main, ["--frames", "100"], "holds a run of 10000 frames"),
        (confidence_separation.main, ["--out", "{tmp}"], "is a folder"),
        (confidence_separation.main, ["--walls", "0"], "--walls must be whole centimetres >= 1"),
        (confidence_separation.main, ["--out", "{tmp}/c.json", "--weights", "{tmp}/none"], "no network weights"),
    ],
)
def test_bad_arguments_are_one_line_errors(main, argv, message, tmp_path, capsys):
    (tmp_path / "a_file").write_text("in the way")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, err = exit_code_and_error(main, argv, capsys)
    assert code == 2 and message.replace("{tmp}", str(tmp_path)) in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # nothing written


def test_contact_sheet_of_a_missing_shard(tmp_path, capsys):
    out = tmp_path / "sheet.png"
    code, err = exit_code_and_error(contact_sheet.main, ["--out", str(out), "--shard", str(tmp_path / "none.npz")], capsys)
    assert code == 2 and "shard not found" in err and not out.exists()


def test_the_command_lines_hand_presence_default_is_the_trackers():
    from tracker.pipeline import TrackerConfig

    assert cli.build_parser().parse_args([]).min_hand_probability == TrackerConfig.min_hand_probability


def test_a_damaged_default_result_is_no_reason_for_a_traceback(tmp_path, monkeypatch, capsys):
    # The guard that keeps a committed result from a shorter run reads it: a damaged one is
    # no committed run, and the arguments are checked on (a bad one still refused).
    (tmp_path / "pipeline_speed_onnxruntime.json").write_text("{not json")
    monkeypatch.setattr(pipeline_speed, "RESULTS", tmp_path)
    code, err = exit_code_and_error(pipeline_speed.main, ["--frames", "100", "--profile", str(tmp_path)], capsys)
    assert code == 2 and "--profile " + str(tmp_path) + " is a folder" in err and "Traceback" not in err
