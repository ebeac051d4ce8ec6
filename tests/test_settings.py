"""Settings: a bad value stops the service at start, with one line naming the setting."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest
from apscheduler.triggers.cron import CronTrigger
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioning.cli import main
from provisioning.settings import Settings, SettingsError, env_name, load

# Every crontab setting, found the way the service reads them: the next one added is walked too.
SCHEDULES = sorted(field for field in Settings.model_fields if field.startswith("schedule_"))

# Malformed, out of range, the wrong number of fields, and a valid-looking date that never comes.
BAD_CRONTABS = ["every day", "61 * * * *", "* * * *", "0 0 31 2 *"]


def test_the_walk_finds_every_schedule_setting():
    names = {env_name(field) for field in SCHEDULES}
    assert "PROVISIONING_SCHEDULE_OUTBOX_PRUNE" in names
    assert all(name.startswith("PROVISIONING_SCHEDULE_") for name in names)


@pytest.mark.parametrize("bad", BAD_CRONTABS)
@pytest.mark.parametrize("field", SCHEDULES)
def test_a_bad_crontab_stops_the_command_with_one_line_naming_it(field, bad, tmp_path):
    name = env_name(field)
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/unused.db", name: bad}
    result = CliRunner().invoke(main, ["db", "upgrade"], env=env, catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: invalid setting {name}: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "unused.db").exists()


def test_a_bad_schedule_stops_the_worker_process_with_status_2(tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path}/unused.db",
        "PROVISIONING_SCHEDULE_OUTBOX_PRUNE": "30 4 * *",
    }
    process = subprocess.run(
        [sys.executable, "-m", "provisioning.cli", "worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode == 2, process.stderr
    assert process.stderr.strip().splitlines() == [
        "error: invalid setting PROVISIONING_SCHEDULE_OUTBOX_PRUNE: Value error, "
        "not a crontab expression (Wrong number of fields; got 4, expected 5)"
    ]


_FIELD = st.text(alphabet="0123456789*/,-#LW?abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from(SCHEDULES),
    expression=st.one_of(
        st.lists(_FIELD, min_size=5, max_size=5).map(" ".join),
        st.text(max_size=30),
    ),
)
def test_a_schedule_the_service_starts_with_always_falls_due(field, expression):
    """Any value is either refused at start, naming the setting, or a schedule with a next run."""
    try:
        loaded = load(**{field: expression})
    except SettingsError as exc:
        assert str(exc).startswith(f"invalid setting {env_name(field)}: ")
        assert "\n" not in str(exc)
        return
    trigger = CronTrigger.from_crontab(getattr(loaded, field), timezone="UTC")
    assert trigger.get_next_fire_time(None, dt.datetime.now(dt.UTC)) is not None
