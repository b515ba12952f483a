"""What the proxies' entry points share: logging set-up and the serve-until-signalled loop."""
