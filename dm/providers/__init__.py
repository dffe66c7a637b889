"""Venue providers: one worker process per provider (DESIGN §1). ``base`` holds the connection
loop; each venue module adds its symbology, subscriptions and codec."""
