"""Reports: the terminal and markdown table, the HTML report, plots, and the diff against another run."""
