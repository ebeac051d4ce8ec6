"""Which callback endpoints an allowlisted prefix covers."""

from __future__ import annotations

import pytest

from provisioning.requests import callbacks
from provisioning.settings import SettingsError, load


@pytest.mark.parametrize(
    ("prefix", "endpoint", "covered"),
    [
        ("https://pep.example.com/cb/", "https://pep.example.com/cb/x", True),
        ("https://pep.example.com/cb", "https://pep.example.com/cb", True),
        ("https://pep.example.com/cb", "https://pep.example.com/cb/x", True),
        ("https://pep.example.com/cb", "https://pep.example.com/cbx", False),
        ("https://pep.example.com", "https://pep.example.com/anything", True),
        ("https://pep.example.com", "https://pep.example.com:443/x", True),
        ("https://pep.example.com", "https://pep.example.com:8443/x", False),
        ("https://pep.example.com", "https://pep.example.com.evil.org/x", False),
        ("https://pep.example.com", "http://pep.example.com/x", False),
        ("https://PEP.example.com/cb", "https://pep.EXAMPLE.com/cb/x", True),
    ],
)
def test_an_allowlisted_prefix_covers(prefix, endpoint, covered):
    assert callbacks.covers(prefix, endpoint) is covered


def test_the_service_does_not_start_with_callbacks_it_cannot_sign_or_a_bad_prefix():
    with pytest.raises(SettingsError, match="PROVISIONING_CALLBACK_SECRET"):
        load(callback_allowlist="https://pep.example.com/cb")
    with pytest.raises(SettingsError, match="PROVISIONING_CALLBACK_ALLOWLIST"):
        load(callback_allowlist="pep.example.com/cb", callback_secret="k" * 16)
    with pytest.raises(SettingsError, match="PROVISIONING_CALLBACK_ALLOWLIST"):
        load(callback_allowlist="https://pep.example.com/cb?x=1", callback_secret="k" * 16)
    taken = load(
        callback_allowlist=" https://a.example/cb , https://b.example ", callback_secret="k" * 16
    )
    assert taken.callback_prefix_list == ("https://a.example/cb", "https://b.example")
    assert load().callback_prefix_list == ()
