"""The LangSmith side: the only code that makes HTTP calls (paced, retried, by run or by project)."""
