//! JUnit XML reports of a run.
