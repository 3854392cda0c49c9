"""The archive agent: every rejected part's images, verdicts, model versions and PLC result
on disk, with an index an auditor can query by part id, time and label."""
