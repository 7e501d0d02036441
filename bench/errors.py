"""Errors the CLI turns into one clear line and exit code 2.

A `BenchError` is always the user's input (or environment) being wrong, never a
bug: the message must name the bad value and, where there is a closed set, the
valid choices.
"""


class BenchError(Exception):
    """Bad input: unknown name, ill-typed value, missing or corrupt data."""

    exit_code = 2


class NotApplicable(Exception):
    """An attacker cannot use the released data (e.g. `transfer` on feature maps).

    The runner records `status: not_applicable` with this message as the reason.
    """


def one_line(e: BaseException) -> str:
    """`Type: message`, cut to its first line: how a failure is named in a record or an error line."""
    return (f"{type(e).__name__}: {e}".strip().splitlines() or [type(e).__name__])[0]


def unknown(kind: str, value: object, choices) -> BenchError:
    """The standard 'unknown X' error, listing every valid choice."""
    valid = ", ".join(sorted(map(str, choices))) or "(none)"
    return BenchError(f"unknown {kind} {value!r}; valid choices: {valid}")


class ContractError(Exception):
    """A plugin broke the protocol: output with the wrong number of rows, a shape the next stage
    cannot take, non-finite values, an image release outside [0, 1].

    Not the user's input: the runner records the run as `failed` with this message, and no
    number is computed from such output.
    """
