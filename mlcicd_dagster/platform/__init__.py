"""Where things live and which parts are used: home layout, environments, resources, alerts."""
