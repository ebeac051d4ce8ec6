"""Which callback endpoints an allowlisted prefix covers."""

from __future__ import annotations

import pytest

from provisioning.requests import callbacks


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
