"""
Every code block of the docs/ pages, run as a user would copy it, in real Airflow against the simulator.

Blocks are found by parsing the pages, so a new block is run without a new test: a ``python``
block that defines a DAG runs with ``airflow dags test``, any other ``python`` block runs as a
script, a ``bash`` block runs with bash (the simulator port swapped for a free one). The
benchmark commands take minutes to hours: each is started up to its argument parsing, which
checks the script and its options. Blocks of any other kind must be ``text`` or a directive.
"""

from __future__ import annotations

import csv
import importlib
import json
import re
import subprocess
import sys
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest

from airflow_provider_zuora_aqua.simulator import AquaSimulator
from airflow_provider_zuora_aqua.testing.airflow_env import AirflowHome, free_port, stop_process_group
from tests.docs.blocks import (
    DIRECTIVES,
    DOCS_SIMULATOR_PORT,
    EXAMPLE_DAGS,
    NON_CODE,
    PARSE_ONLY,
    ROOT,
    RUNNABLE,
    S3_BUCKET,
    S3_CONN_ENV,
    SIMULATOR_COMMAND,
    Block,
    all_blocks,
    blocks_in,
    command_lines,
    dag_id,
    included_example_dags,
    included_file,
    run_bash,
    s3_client,
    s3_connection,
    standalone_blocks,
    with_bin_path,
)

pytestmark = pytest.mark.airflow_e2e


def _ids(blocks: list[Block]) -> list[str]:
    return [str(block) for block in blocks]


def dags_test(home: AirflowHome, dag: str, env: dict[str, str] | None = None) -> str:
    """``airflow dags test <dag>``; the test fails unless the run succeeds. Returns the output."""
    process = home.spawn("dags", "test", dag, log_name=f"dags-test-{dag}.out", env=env)
    try:
        returncode = process.wait(240)
    finally:
        stop_process_group(process)
    log = home.read_log(f"dags-test-{dag}.out")
    assert returncode == 0, log[-5000:]
    assert "state=success" in log, log[-5000:]
    return log


# ---------------------------------------------------------------------------------------------
# Which blocks exist


def test_every_block_is_runnable_text_or_a_directive() -> None:
    kinds = RUNNABLE + NON_CODE + DIRECTIVES
    odd = [f"{block} ({block.info or 'no language'})" for block in all_blocks() if block.language not in kinds]
    assert odd == []


def test_the_pages_have_runnable_blocks_of_both_kinds() -> None:
    # Guards the parser: if it stopped finding blocks, the parametrized tests below would run none.
    assert len(blocks_in("python")) >= 3 and len(blocks_in("bash")) >= 4


def test_every_example_dag_is_included_and_every_include_is_an_example_dag() -> None:
    included = included_example_dags()
    assert all(path.is_file() and path.parent == EXAMPLE_DAGS for path in included), included
    assert sorted(included) == sorted(EXAMPLE_DAGS.glob("*.py"))


@pytest.mark.parametrize("block", blocks_in("{literalinclude}"), ids=_ids(blocks_in("{literalinclude}")))
def test_an_included_part_is_code_between_one_start_and_one_end_marker(block: Block) -> None:
    # Airflow's how-to convention: "# [START name]" ... "# [END name]" around what a guide shows.
    options = block.options
    assert options.get("language") == "python", options
    if "start-after" not in options and "end-before" not in options:
        return  # the whole file
    start, end = options["start-after"], options["end-before"]
    assert re.fullmatch(r"\[START (\w+)\]", start) and end == start.replace("[START", "[END"), options
    lines = included_file(block).read_text().splitlines()
    [first] = [i for i, line in enumerate(lines) if line.strip() == f"# {start}"]
    [last] = [i for i, line in enumerate(lines) if line.strip() == f"# {end}"]
    part = lines[first + 1 : last]
    dedent = int(options.get("dedent", 0))
    assert part and all(not line.strip() or line.startswith(" " * dedent) for line in part), part
    assert not any("[START" in line or "[END" in line for line in part), "markers must not nest"


def test_the_api_reference_pages_hold_nothing_but_automodule() -> None:
    # eval-rst could hide code that no test runs: here it only names a module for autodoc.
    blocks = blocks_in("{eval-rst}")
    assert len(blocks) >= 6
    for block in blocks:
        match = re.fullmatch(r"\.\. automodule:: (airflow_provider_zuora_aqua(?:\.\w+)+)\n", block.body)
        assert match, f"{block}: {block.body!r}"
        importlib.import_module(match[1])


# ---------------------------------------------------------------------------------------------
# python blocks


def _check_s3_export(sim: AquaSimulator, env: dict[str, str], log: str) -> None:
    [job] = sim.jobs()
    keys = [item["Key"] for item in s3_client(json.loads(env[S3_CONN_ENV])["extra"]["endpoint_url"])
            .list_objects_v2(Bucket=S3_BUCKET)["Contents"]]  # fmt: skip
    manifests = [key for key in keys if key.endswith("/_manifest.json")]
    assert len(manifests) == 1 and any(key.endswith("/accounts.csv") for key in keys), keys
    assert job["status"] == "completed"


@pytest.mark.parametrize("block", standalone_blocks("python"), ids=_ids(standalone_blocks("python")))
def test_python_block_runs(block: Block, docs_home: AirflowHome, docs_simulator: AquaSimulator, request, tmp_path):
    if "DAG(" not in block.body:
        script = tmp_path / "block.py"
        script.write_text(block.body)
        result = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return

    dag = dag_id(block.body)
    (docs_home.dags_folder / f"{dag}.py").write_text(block.body)
    env = {}
    if "s3://" in block.body:
        env[S3_CONN_ENV] = s3_connection(request.getfixturevalue("s3_endpoint"))
    log = dags_test(docs_home, dag, env)

    jobs = docs_simulator.jobs()
    assert jobs and all(job["status"] == "completed" for job in jobs)
    assert docs_simulator.requests_for("delete_job") == []
    if "s3://" in block.body:
        _check_s3_export(docs_simulator, env, log)


# ---------------------------------------------------------------------------------------------
# The example DAGs the pages include


@pytest.mark.parametrize("path", included_example_dags(), ids=lambda path: path.name)
def test_included_example_dag_runs(
    path: Path, docs_home: AirflowHome, docs_simulator: AquaSimulator, exports_folder, request
):
    source = path.read_text()
    writes_to_s3 = 'destination="s3://' in source  # not a mention in a comment or docstring
    assert writes_to_s3 == (path.name == "example_zuora_aqua_object_storage.py")
    env = {}
    if writes_to_s3:
        env[S3_CONN_ENV] = s3_connection(request.getfixturevalue("s3_endpoint"))
    log = dags_test(docs_home, dag_id(source), env)

    statuses = sorted(job["status"] for job in docs_simulator.jobs())
    if path.name == "example_zuora_aqua_cancel.py":
        assert statuses == ["cancelled"]
    else:
        assert statuses and set(statuses) == {"completed"}
        assert docs_simulator.requests_for("delete_job") == []
    manifests = sorted(exports_folder.rglob("_manifest.json"))
    if path.name == "example_zuora_aqua_incremental.py":
        _check_incremental_export(source, exports_folder / "incremental", docs_simulator)
    elif path.name == "example_zuora_aqua_load_sql.py":
        # Its first DAG is the export that announces the windows: Account only, from the DAG's start.
        _check_incremental_export(source, exports_folder / "load-sql", docs_simulator, queries=("Account",))
    else:
        assert len(manifests) == (2 if path.name == "example_zuora_aqua_results.py" else 0)
    if writes_to_s3:
        _check_s3_export(docs_simulator, env, log)


def _check_incremental_export(
    source: str, destination: Path, sim: AquaSimulator, queries: tuple[str, ...] = ("Account", "Subscription")
) -> None:
    """Per query, windows that tile from the DAG's start, and each current row in them exactly once."""
    start = re.search(r'start="([^"]+)"', source).group(1).replace("Z", "+00:00")
    wanted = {"Account": lambda row: True, "Subscription": lambda row: row["Status"] != "Expired"}
    for query in queries:
        matches = wanted[query]
        manifests = [json.loads(path.read_text()) for path in sorted((destination / query).glob("*/_manifest.json"))]
        windows = [(manifest["window"]["start"], manifest["window"]["end"]) for manifest in manifests]
        assert windows and windows[0][0] == start, windows
        assert all(left[1] == right[0] for left, right in zip(windows, windows[1:])), windows
        mark = datetime.fromisoformat(windows[-1][1])
        exported = []
        for manifest in manifests:
            for entry in manifest["files"]:
                with open(entry["uri"].removeprefix("file://"), newline="") as handle:
                    # AQuA names the deleted column after the object: "Account.IsDeleted".
                    exported += [(row["Id"], row[f"{query}.IsDeleted"]) for row in csv.DictReader(handle)]
        table = sim.tenant.rows(query)
        current = [row for row in table if datetime.fromisoformat(start) <= row["UpdatedDate"] < mark and matches(row)]
        assert current and sorted(exported) == sorted((row["Id"], "false") for row in current)


# ---------------------------------------------------------------------------------------------
# bash blocks


def _is_benchmark(command: str) -> bool:
    return bool(re.match(r"^\.venv/bin/python (benchmarks/\S+\.py|-m benchmarks\.\w+)", command))


@pytest.mark.parametrize("block", standalone_blocks("bash"), ids=_ids(standalone_blocks("bash")))
def test_bash_block_runs(block: Block, docs_home: AirflowHome, tmp_path: Path):
    commands = command_lines(block.body)
    env = with_bin_path(docs_home.env)

    if all(_is_benchmark(command) for command in commands):
        # Minutes to hours each: the command starts and its own parser accepts its arguments.
        for command in commands:
            argv = command.split()[1:]
            result = subprocess.run(
                [sys.executable, str(PARSE_ONLY), *argv], cwd=ROOT, capture_output=True, text=True, timeout=120
            )
            assert result.returncode == 0 and "parsed:" in result.stdout, command + result.stdout + result.stderr
        return

    if commands[-1].startswith(SIMULATOR_COMMAND) and not commands[-1].endswith("&"):
        # A simulator in the foreground: it prints its base URL first, then serves until stopped.
        process = subprocess.Popen(
            ["bash", "-c", block.body],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            first_line = process.stdout.readline().strip()
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+", first_line), first_line + process.stderr.read()
            port = first_line.rsplit(":", 1)[1]
            with urllib.request.urlopen(f"{first_line}/_simulator/requests", timeout=10) as answer:
                assert answer.status == 200
        finally:
            stop_process_group(process)
        assert port != "0"
        return

    if all(command.startswith("export ") for command in commands):
        # A connection definition: the hook reads it as the page says.
        check = (
            "python -c 'from airflow_provider_zuora_aqua.hooks.aqua import ZuoraAquaHook; "
            's = ZuoraAquaHook().settings; print("base_url=" + s.base_url)\''
        )
        returncode, output = run_bash(block.body + "\n" + check + "\n", env, tmp_path)
        assert returncode == 0, output
        host = re.search(r"rest\.[a-z.]+\.zuora\.com", block.body).group(0)
        assert f"base_url=https://{host}" in output.splitlines(), output
        return

    script = block.body.replace(str(DOCS_SIMULATOR_PORT), str(free_port()))
    returncode, output = run_bash(script, env, tmp_path)
    assert returncode == 0, output[-5000:]
    promised = block.body.count("# Connection success!")
    assert output.count("Connection success!") == promised, output[-5000:]
    if "dags test" in block.body:
        assert "state=success" in output, output[-5000:]
    if "DEFAULT_DEFERRABLE=True" in block.body:
        # The task deferred and AquaJobTrigger saw the job end (the trigger runs in-process in dags test).
        assert "Pausing task as DEFERRED" in output, output[-5000:]
        assert re.search(r"AQuA job \w+ is completed.*AquaJobTrigger", output), output[-5000:]
