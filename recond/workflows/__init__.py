"""What happens around each job (issue 25): presets chosen by inbox subfolder, a hook and a
webhook on every result, and redoing a result with other settings.

The worker calls these; they read the settings and write only the job store's owed deliveries,
never the inbox or the outbox.
"""
