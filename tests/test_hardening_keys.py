"""Workers starting together on a fresh machine must all watermark with one default key.

Real processes race on a fresh data directory; saving a key never replaces one.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time

from distillguard.watermark import WatermarkKey
from tests.helpers import assert_user_error, mode, run, umask

# -- one default watermark key, however many workers start at once ----------------------

WORKERS, ROUNDS = 8, 4


def _race_for_the_key(base: str, barrier, results) -> None:
    from distillguard.gateway.server import watermark_key
    from distillguard.watermark import keys

    logging.disable(logging.WARNING)  # the winner's "created a key" notice
    write = keys.json.dump

    def slow_disk(*args, **kwargs) -> None:  # widens the window every worker is inside
        time.sleep(0.2)
        write(*args, **kwargs)

    keys.json.dump = slow_disk
    for round_ in range(ROUNDS):
        os.environ["XDG_DATA_HOME"] = f"{base}/round-{round_}"  # platformdirs on Linux
        barrier.wait(timeout=120)
        results.put((round_, watermark_key(None).key_id))


def test_workers_starting_together_all_use_one_default_watermark_key(tmp_path):
    spawn = multiprocessing.get_context("spawn")
    barrier, results = spawn.Barrier(WORKERS), spawn.Queue()
    processes = [
        spawn.Process(target=_race_for_the_key, args=(str(tmp_path), barrier, results))
        for _ in range(WORKERS)
    ]
    with umask(0):
        for process in processes:
            process.start()
    seen: dict[int, set[str]] = {r: set() for r in range(ROUNDS)}
    for _ in range(WORKERS * ROUNDS):
        round_, key_id = results.get(timeout=180)
        seen[round_].add(key_id)
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    for round_, ids in seen.items():
        folder = tmp_path / f"round-{round_}" / "distillguard"
        on_disk = WatermarkKey.load(folder / "watermark-key.json").key_id
        assert ids == {on_disk}, f"round {round_}: {len(ids)} different keys"
        assert mode(folder / "watermark-key.json") == 0o600
        assert mode(folder) == 0o700
        assert sorted(p.name for p in folder.iterdir()) == ["watermark-key.json"]  # no temp left


def test_saving_a_key_never_replaces_one_that_exists(tmp_path):
    path = tmp_path / "key.json"
    first = WatermarkKey.generate()
    first.save(path)
    result = run("watermark", "keygen", "--out", str(path))
    assert_user_error(result, "already exists")
    assert WatermarkKey.load(path).key_id == first.key_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key.json"]
