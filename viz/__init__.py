"""The dashboard side of trainviz: sinks, Visdom windows, the server."""
