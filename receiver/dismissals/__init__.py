"""The dismissal lifecycle: request, dispatch, match, reconcile."""
