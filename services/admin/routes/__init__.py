"""The admin API by subject: settings, one SMS, blacklist, stats."""
