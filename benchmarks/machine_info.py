"""What the benchmark scripts print about the machine they ran on (imported by them)."""
import os
import platform


def cpu_name():
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def load_average():
    """The 1-minute load average (other jobs on the cores move every timing)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
