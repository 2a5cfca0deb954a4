"""The command line as the tests type it: dgm(...) through Typer's CliRunner, ok(...) that must succeed,
fails(...) that must end in one `error:` line with the given words. Not collected by pytest."""

from typer.testing import CliRunner

from dgm_cli.cli import app


def dgm(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def ok(*args):
    result = dgm(*args)
    assert result.exit_code == 0, result.output
    return result


def fails(*args, message: str):
    result = dgm(*args)
    assert result.exit_code == 1, result.output
    assert message in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error:") and "Traceback" not in result.output
    return result
