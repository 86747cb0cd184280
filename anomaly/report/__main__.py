"""python -m anomaly.report …"""

from anomaly.report.cli import main

if __name__ == "__main__":
    main()
