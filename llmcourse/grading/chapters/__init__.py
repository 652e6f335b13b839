"""Each chapter's graded checks: ``chNN`` defines ``chapter``, a :class:`llmcourse.grading.Chapter`."""
