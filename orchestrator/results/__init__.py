"""A sweep's results, read without writing: the read API of status/report/best (read), one row per
trial (table), the HTML report (html) and its plots (plots)."""
