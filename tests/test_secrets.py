"""Secrets come from the environment or from a mounted secret file, never from the graph."""

from pathlib import Path

import pytest

from graphrun import ConfigError, operator_token, read_secret, token_matches


def test_a_secret_comes_from_its_variable_or_from_the_file_its_FILE_variable_names(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file\n")
    assert read_secret("redis_password", environ={"GRAPHRUN_REDIS_PASSWORD": "s3cret"}) == "s3cret"
    both = {"GRAPHRUN_OPERATOR_TOKEN": "stale", "GRAPHRUN_OPERATOR_TOKEN_FILE": str(tmp_path / "token")}
    assert operator_token(environ=both) == "from-file"  # a mounted secret wins over a variable left in an image
    assert operator_token(environ={}) is None


def test_an_unreadable_secret_file_is_an_error_that_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"GRAPHRUN_OPERATOR_TOKEN_FILE=.*missing: cannot read the secret file"):
        operator_token(environ={"GRAPHRUN_OPERATOR_TOKEN_FILE": str(tmp_path / "missing")})


def test_no_token_is_ever_matched_when_none_is_expected() -> None:
    assert token_matches("abc", "abc") and not token_matches("abd", "abc")
    assert not token_matches("", None) and not token_matches(None, None) and not token_matches("abc", None)
