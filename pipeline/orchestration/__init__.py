"""Running the steps: the refresh, its child process and the Prefect flow."""
