"""`python -m analysis`: what there is to run, since `python -m analysis.<name>` with a wrong name only
says that no such module exists."""

from analysis.common import available_studies

if __name__ == "__main__":
    print("python -m analysis.<study> [--uri URI] [--experiment NAME] [--all-sweeps] [--out FOLDER]  analyses one study")
    print("python -m analysis.report [--uri URI] [--out FOLDER] [--all-sweeps]  analyses every study into one report")
    print(f"studies: {', '.join(available_studies())}")
