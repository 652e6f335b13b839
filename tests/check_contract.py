"""What every chapter's checks promise, as assertions the per-chapter check tests share."""
from llmcourse.grading import Chapter, run_checks


def assert_registers(chapter: Chapter, number: str, exercises, at_least: int = 5) -> None:
    """The chapter has the expected exercises, 2-3 checks each, every check with a hint."""
    assert chapter.number == number
    assert set(chapter.exercises) == set(exercises)
    assert len(chapter.exercises) >= at_least
    for exercise in chapter.exercises:
        checks = [c for c in chapter.checks if c.exercise == exercise]
        assert 2 <= len(checks) <= 3, exercise
        assert all(c.hint for c in checks)


def assert_passes(chapter: Chapter, exercise: str, implementation) -> None:
    """Every check of ``exercise`` passes for ``implementation``."""
    results = run_checks(chapter, {exercise: implementation}, exercise)
    assert results and all(r.passed for r in results), [r.message for r in results if not r.passed]
