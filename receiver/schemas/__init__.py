"""Marshmallow schemas: Tencent's wire format in, our API in and out."""
