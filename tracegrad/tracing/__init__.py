"""Tracing: Tracer values record operations into a GraphBuilder (see ``tracer``)."""

from .source import user_source
from .tracer import GraphBuilder, Tracer, aval_of, bind, is_tracer

__all__ = ["GraphBuilder", "Tracer", "aval_of", "bind", "is_tracer", "user_source"]
