"""Stage 3, reporting: a results document -> tables, Markdown and plots a person can read."""
