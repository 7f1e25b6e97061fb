"""vLLM's command-line spellings on `vdiff serve`: underscores in flag names and dotted keys of JSON flags.

The rules are those of vLLM's FlexibleArgumentParser.parse_args (vllm/utils/argparse_utils.py): the
name from `--` to the first `.` has its underscores dashed (values never); `--flag.key value` and
`--flag.key=value` build `--flag '{"key": value}'`, more dots nest, `key+` appends comma-separated items;
a value is JSON, else a human-readable int (1k = 1000, 1K = 1024), else a string; the dotted keys of a
flag merge into one object that comes after the other arguments."""

from __future__ import annotations

import json

import pytest
from vdiff.entrypoints.cli_args import make_arg_parser, resolve_serve_args
from vdiff.entrypoints.vllm_argv import normalize_argv


def test_underscores_in_flag_names_are_dashes_and_values_are_kept() -> None:
    assert normalize_argv(
        ["m_1", "--max_num_seqs", "4", "--served_model_name=my_model", "--chat-template", "a_b"]
    ) == [
        "m_1",
        "--max-num-seqs",
        "4",
        "--served-model-name=my_model",
        "--chat-template",
        "a_b",
    ]


def test_dotted_keys_fold_into_one_json_value_after_the_rest() -> None:
    argv = [
        "m",
        "--structured-outputs-config.backend",
        "guidance",
        "--port",
        "9000",
        "--structured_outputs_config.disable_any_whitespace=true",
    ]
    out = normalize_argv(argv)
    assert out[:3] == ["m", "--port", "9000"]
    assert out[3] == "--structured-outputs-config"
    assert json.loads(out[4]) == {"backend": "guidance", "disable_any_whitespace": True}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--x.a.b", "1"], {"a": {"b": 1}}),
        (["--x.a.b", "1", "--x.a.c", "[2]"], {"a": {"b": 1, "c": [2]}}),
        (["--x.k+", "a,b", "--x.k+=c"], {"k": ["a", "b", "c"]}),
        (["--x.n", "1k", "--x.m", "1K", "--x.f", "2.5k"], {"n": 1000, "m": 1024, "f": 2500}),
        (["--x.s", "hello"], {"s": "hello"}),
        (["--x.s", "1.5K"], {"s": "1.5K"}),  # no decimals with a binary suffix: a string, as vLLM
        (["--x.a", "1", "--x.a", "2"], {"a": 2}),  # the last one wins
    ],
)
def test_dotted_values_follow_vllm(args: list[str], expected: dict) -> None:
    out = normalize_argv(args)
    assert out[0] == "--x" and json.loads(out[1]) == expected


def test_a_vllm_command_line_with_both_spellings_resolves() -> None:
    parser = make_arg_parser()
    serve_args = resolve_serve_args(
        parser,
        [
            "some-model",
            "--max_num_seqs",
            "4",
            "--gpu_memory_utilization=0.8",
            "--override-generation-config.temperature",
            "0.5",
            "--override-generation-config.top_p",
            "0.9",
            "--structured-outputs-config.backend",
            "guidance",
        ],
        {},
    )
    values = serve_args.values
    assert values["max_num_seqs"] == 4 and values["gpu_memory_utilization"] == 0.8
    assert values["override_generation_config"] == {"temperature": 0.5, "top_p": 0.9}
    assert values["structured_outputs_config"] == {"backend": "guidance"}
    assert serve_args.sources["max_num_seqs"] == "flag"


def test_dotted_form_of_a_plain_flag_is_still_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        resolve_serve_args(make_arg_parser(), ["m", "--max-num-seqs.a", "1"], {})
    assert raised.value.code == 2
    assert "--max-num-seqs" in capsys.readouterr().err
