"""The IM callback endpoint: verify, validate, record, acknowledge."""
