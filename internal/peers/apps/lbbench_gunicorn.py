"""gunicorn settings lbbench adds to its command line: a worker says it
serves (its pid on stdout) once initialised."""
import lbbench_app


def post_worker_init(worker):
    lbbench_app.announce()
