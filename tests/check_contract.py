"""What every chapter's checks promise, as assertions the per-chapter check tests share."""
import time

import pytest

from llmcourse.grading import Chapter, run_checks
from llmcourse.grading.checks import run_check


def assert_registers(chapter: Chapter, number: str, exercises, at_least: int = 5) -> None:
    """The chapter has the expected exercises, 2-3 checks each, every check with a hint."""
    assert chapter.number == number
    assert set(chapter.exercises) == set(exercises)
    assert len(chapter.exercises) >= at_least
    for exercise in chapter.exercises:
        checks = [c for c in chapter.checks if c.exercise == exercise]
        # a warm-up function has 2-3 checks; a class the learner builds (CausalSelfAttention, GPT...) up to 6
        assert 2 <= len(checks) <= (6 if exercise[0].isupper() else 3), exercise
        assert all(c.hint for c in checks)


def assert_passes(chapter: Chapter, exercise: str, implementation) -> None:
    """Every check of ``exercise`` passes for ``implementation``."""
    results = run_checks(chapter, {exercise: implementation}, exercise)
    assert results and all(r.passed for r in results), [r.message for r in results if not r.passed]


def contract_tests(chapter: Chapter, number: str, correct: dict, package: dict, at_least: int = 5):
    """The tests every chapter's check tests share; bind them to ``test_*`` names in the test module.

    * the chapter registers exactly the exercises of ``correct``, each with 2-3 hinted checks;
    * every check passes for the independently written ``correct`` implementations;
    * every check passes for the package's own functions in ``package``;
    * every check gives the same result twice and ends far inside the grader's per-check time limit
      (the default one, or its exercise's declared time budget).
    """

    def test_chapter_registers_its_exercises():
        assert_registers(chapter, number, correct, at_least=at_least)

    @pytest.mark.parametrize("exercise", sorted(correct))
    def test_checks_pass_for_a_correct_implementation(exercise):
        assert_passes(chapter, exercise, correct[exercise])

    @pytest.mark.parametrize("exercise", sorted(package))
    def test_the_package_functions_pass_the_checks(exercise):
        assert_passes(chapter, exercise, package[exercise])

    def test_checks_are_quick_and_deterministic():
        run_checks(chapter, correct)  # warm up (imports, first optimizer)
        first = [r.to_dict() for r in run_checks(chapter, correct)]
        for check in chapter.checks:
            start = time.perf_counter()
            assert run_check(check, correct).passed
            # the grader allows 10 s (an idle CPU needs < 1 s), or the exercise's declared time budget
            limit = 2.0 if check.exercise not in chapter.budgets else check.timeout / 4
            assert time.perf_counter() - start < limit, check.name
        assert first == [r.to_dict() for r in run_checks(chapter, correct)]

    return (test_chapter_registers_its_exercises, test_checks_pass_for_a_correct_implementation,
            test_the_package_functions_pass_the_checks, test_checks_are_quick_and_deterministic)
