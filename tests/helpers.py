"""Assertions shared by the CLI tests."""

from __future__ import annotations


def assert_user_error(result, exit_code: int, *fragments: str) -> str:
    """One "error:" line on stderr, the exit code, no traceback, nothing on stdout."""
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit)  # left through the funnel, not a crash
    assert "Traceback" not in result.output
    assert result.stdout == ""
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    for fragment in fragments:
        assert fragment in line, line
    return line
