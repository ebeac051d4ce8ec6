"""The job registry: every job reads its crontab from a schedule setting, and every one is read."""

from __future__ import annotations

from jobs.registry import JOBS
from provisioning.settings import Settings


def test_every_job_has_its_own_schedule_setting_and_every_schedule_setting_a_job():
    schedules = {field for field in Settings.model_fields if field.startswith("schedule_")}
    settings_of_jobs = [job.setting for job in JOBS.values()]
    assert len(settings_of_jobs) == len(set(settings_of_jobs))
    assert set(settings_of_jobs) == schedules
