"""The application layer: what the command line and the web app both do with the library (build a
source from a description under a key policy, score with a budget, run background jobs, start
training runs). Nothing below this package knows about sessions, owners or budgets."""
