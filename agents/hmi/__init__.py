"""The HMI agent: a live preview of every camera with its verdicts, served to a browser."""
