"""Tencent Cloud IM group-dismissal receiver: callbacks in, dismissals out, matched."""
