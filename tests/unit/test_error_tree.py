"""The one exception tree: every exception class edged defines lives in edged/errors.py under EdgedError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import edged
from edged import errors


def edged_modules() -> list[str]:
    return [info.name for info in pkgutil.walk_packages(edged.__path__, "edged.")
            if info.name != "edged.__main__"]  # importing __main__ runs the command line


def test_no_module_outside_errors_defines_an_exception_class():
    strays = []
    for name in edged_modules():
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if (inspect.isclass(value) and issubclass(value, BaseException)
                    and value.__module__ == name and name != "edged.errors"):
                strays.append(f"{name}.{attr}")
    assert strays == []


def test_every_class_in_errors_derives_from_edged_error_and_is_in_the_docstring_tree():
    classes = [value for value in vars(errors).values()
               if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == "edged.errors"]
    assert len(classes) > 10
    for cls in classes:
        assert issubclass(cls, errors.EdgedError), cls
        assert re.search(rf"\b{cls.__name__}\b", errors.__doc__ or ""), f"{cls.__name__} is not in the tree"


def test_request_errors_carry_distinct_wire_codes():
    codes = {cls.code for cls in errors.RequestError.__subclasses__()}
    assert {"bad_request", "unauthorized", "busy", "deadline_exceeded", "cancelled", "model_unavailable",
            "internal"} <= codes
    assert errors.DeadlineExceeded("late").to_wire() == {"error": {"code": "deadline_exceeded", "message": "late"}}
