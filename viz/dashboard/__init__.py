"""The route to visdom: events (the sink), the renderer, the background sender, the client, the windows, and what keeps them cheap."""
